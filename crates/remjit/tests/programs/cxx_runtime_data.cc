// The C++ runtime's exported data, as g++ builds code by default (PIE) and with -fno-pie: both
// reach typeinfos, vtables, the standard streams and locale ids with 32-bit references, which
// the host's copies of them answer. One instance of each, as in a native link.
#include <functional>
#include <iostream>
#include <locale>
#include <map>
#include <memory>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <typeinfo>
#include <vector>

struct Base { virtual ~Base() {} virtual int f() const { return 1; } };
struct Derived : Base { int f() const override { return 2; } };
struct Other : Base {};

__attribute__((noinline)) void throw_runtime(int x) { if (x) throw std::runtime_error("runtime"); }

int main(int argc, char **) {
  int status = 0;
  try { throw_runtime(argc); } catch (const std::exception &e) { std::cout << "caught " << e.what() << "\n"; status += 1; }
  try { throw std::logic_error("logic"); } catch (const std::logic_error &e) { std::cout << "caught " << e.what() << "\n"; status += 2; }
  std::vector<int> v{1, 2, 3};
  try { v.at(7); } catch (const std::out_of_range &e) { std::cout << "out_of_range from vector::at\n"; status += 4; }
  try {
    std::vector<long> huge;
    huge.reserve(huge.max_size() / 2);
  } catch (const std::bad_alloc &e) { std::cout << "bad_alloc " << e.what() << "\n"; status += 8; }
  catch (const std::length_error &e) { std::cout << "length_error\n"; }
  try { throw std::bad_alloc(); } catch (const std::exception &e) { std::cout << "thrown " << typeid(e).name() << "\n"; }
  Base *b = argc > 5 ? static_cast<Base *>(new Other) : new Derived;
  if (Derived *d = dynamic_cast<Derived *>(b)) std::cout << "dynamic_cast " << d->f() << "\n";
  std::cout << "not Other: " << (dynamic_cast<Other *>(b) == nullptr) << " " << typeid(*b).name() << "\n";
  try { (void)dynamic_cast<Other &>(*b); } catch (const std::bad_cast &e) { std::cout << "bad_cast\n"; }
  delete b;
  std::string s = "hello";
  s += std::string(40, 'x');
  std::map<std::string, int> m{{"a", 1}, {"b", 2}};
  m["c"] = 3;
  for (auto &kv : m) std::cout << kv.first << "=" << kv.second << " ";
  std::cout << s.size() << "\n";
  auto sp = std::make_shared<std::string>("shared");
  std::weak_ptr<std::string> w = sp;
  std::function<int(int)> fn = [&](int x) { return x + (int)sp->size(); };
  std::cout << *w.lock() << " " << fn(1) << " " << sp.use_count() << "\n";
  int out = 0;
  std::thread t([&] { out = 42; });
  t.join();
  std::cout << "thread " << out << "\n";
  // Locale ids (GLOBAL and STB_GNU_UNIQUE ones): one instance, the one libstdc++ indexes by.
  std::cout << "ids " << std::ctype<char>::id._M_id() << " " << std::numpunct<char>::id._M_id()
            << " " << std::collate<char>::id._M_id() << "\n";
  const std::ctype<char> &ct = std::use_facet<std::ctype<char>>(std::locale());
  std::cout << ct.toupper('q') << " " << std::has_facet<std::numpunct<char>>(std::locale::classic()) << "\n";
  std::ostringstream os;
  os.imbue(std::locale::classic());
  os << 1234567 << " " << 3.5;
  std::cout << os.str() << std::endl;
  std::cerr << "to cerr\n";
  return status;
}
