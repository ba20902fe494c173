// remjit repl: declarations every C++ cell sees.
#include <type_traits>
#include <utility>
extern "C" {
void __remjit_flush(void);
void __remjit_show_int(const char *, long long);
void __remjit_show_uint(const char *, unsigned long long);
void __remjit_show_bool(const char *, int);
void __remjit_show_char(const char *, int);
void __remjit_show_double(const char *, double);
void __remjit_show_float(const char *, float);
void __remjit_show_ldouble(const char *, long double);
void __remjit_show_ptr(const char *, const void *);
void __remjit_show_str(const char *, const char *);
void __remjit_show_strn(const char *, const char *, __SIZE_TYPE__);
void __remjit_show_size(const char *, __SIZE_TYPE__);
void __remjit_show_bytes(const char *, const void *, __SIZE_TYPE__);
}
namespace __remjit {
template <class T> const char *tn() { return __PRETTY_FUNCTION__; }
template <class T, class = void> struct has_size : std::false_type {};
template <class T>
struct has_size<T, std::void_t<decltype(std::declval<const T &>().size())>> : std::true_type {};
template <class T, class = void> struct is_text : std::false_type {};
template <class T>
struct is_text<T, std::void_t<decltype(std::declval<const T &>().size()),
                              decltype(std::declval<const T &>().data() + 0)>>
    : std::is_same<std::remove_cv_t<std::remove_pointer_t<decltype(std::declval<const T &>().data())>>, char> {};
template <class C> constexpr bool is_char = std::is_same_v<std::remove_cv_t<C>, char> ||
    std::is_same_v<std::remove_cv_t<C>, signed char> || std::is_same_v<std::remove_cv_t<C>, unsigned char>;
template <class N> void show(const N &v) {
  using T = std::remove_cv_t<N>;
  const char *t = tn<N>();
  if constexpr (std::is_same_v<T, bool>) __remjit_show_bool(t, v);
  else if constexpr (is_char<T>) __remjit_show_char(t, v);
  else if constexpr (std::is_enum_v<T>) {
    if constexpr (std::is_signed_v<std::underlying_type_t<T>>) __remjit_show_int(t, (long long)v);
    else __remjit_show_uint(t, (unsigned long long)v);
  } else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) __remjit_show_int(t, v);
  else if constexpr (std::is_integral_v<T>) __remjit_show_uint(t, v);
  else if constexpr (std::is_same_v<T, long double>) __remjit_show_ldouble(t, v);
  else if constexpr (std::is_same_v<T, float>) __remjit_show_float(t, v);
  else if constexpr (std::is_floating_point_v<T>) __remjit_show_double(t, v);
  else if constexpr (std::is_null_pointer_v<T>) __remjit_show_ptr(t, nullptr);
  else if constexpr (std::is_pointer_v<T> && is_char<std::remove_pointer_t<T>>) __remjit_show_str(t, (const char *)v);
  else if constexpr (std::is_pointer_v<T>) __remjit_show_ptr(t, (const void *)v);
  else if constexpr (std::is_array_v<T> && is_char<std::remove_extent_t<T>>) __remjit_show_strn(t, (const char *)v, __builtin_strnlen((const char *)v, std::extent_v<T>));
  else if constexpr (is_text<T>::value) __remjit_show_strn(t, v.data(), v.size());
  else if constexpr (has_size<T>::value) __remjit_show_size(t, v.size());
  else __remjit_show_bytes(t, &v, sizeof v);
}
// What an expression cell's value is returned as: a temporary (prvalue or xvalue) by value,
// an lvalue by reference; a const scalar lvalue by value (`S::v`, a static const member with
// no definition, is then not odr-used).
// An xvalue of a copyable type is copied (`std::move(s)` leaves `s` as it was); one of a
// move-only type stays a reference (not moved out of the variable it names).
template <class T> struct held {
  T v;
  held(const T &x) : v(x) {}
};
template <class T> struct keep { using type = T; };
template <class T> struct keep<T &&> {
  using type = std::conditional_t<std::is_copy_constructible_v<T>, held<T>, T &&>;
};
template <class T> struct keep<T &> {
  using type = std::conditional_t<std::is_const_v<T> && std::is_scalar_v<T>, std::remove_cv_t<T>, T &>;
};
template <class T> using keep_t = typename keep<T>::type;
template <class T> struct is_held : std::false_type {};
template <class T> struct is_held<held<T>> : std::true_type {};
template <class F> void run(F f) {
  using R = decltype(f());
  if constexpr (std::is_void_v<R>) f();
  else {
    const auto &v = f();
    if constexpr (is_held<R>::value) show<decltype(v.v)>(v.v);
    else show<std::remove_reference_t<R>>(v);
  }
}
}  // namespace __remjit
