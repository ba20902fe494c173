/* Linker-made symbols and models: an IFUNC (called and address-taken), __start_/__stop_ of a
 * named section, local-dynamic and general-dynamic TLS (and TLS descriptors with
 * -mtls-dialect=gnu2, which use _TLS_MODULE_BASE_). */
#include <stdio.h>
/* IFUNC */
static int impl_a(void) { return 11; }
static int impl_b(void) { return 22; }
static void *resolve_pick(void) { return (void *)impl_b; }
int pick(void) __attribute__((ifunc("resolve_pick")));
/* __start/__stop */
struct entry { const char *name; int v; };
#define REG(n, val) static const struct entry e_##n __attribute__((used, section("my_registry"))) = { #n, val };
REG(alpha, 1) REG(beta, 2) REG(gamma, 3)
extern const struct entry __start_my_registry[], __stop_my_registry[];
/* local-dynamic TLS */
static __thread int ld_a = 5; static __thread int ld_b;
int (*pick_ptr)(void) = pick;
__attribute__((noinline)) void bump_tls(int k) { ld_a += k; ld_b += ld_a; }
__thread int gd_c = 9;
__attribute__((noinline)) int read_gd(void) { return gd_c++; }
int main(void) {
  printf("ifunc %d via ptr %d (a=%d)\n", pick(), pick_ptr(), impl_a());
  int sum = 0; for (const struct entry *e = __start_my_registry; e < __stop_my_registry; e++) { printf("%s=%d ", e->name, e->v); sum += e->v; }
  printf("sum %d\n", sum);
  bump_tls(3); bump_tls(4); printf("tls ld %d %d gd %d %d\n", ld_a, ld_b, read_gd(), read_gd());
  return 0;
}
