// C++ through the JIT: iostream, exceptions across JIT'd frames, static constructors and
// destructors, virtual calls, thread_local with constructor/destructor, std containers.
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>
#include <map>
struct MyErr : std::exception { int code; MyErr(int c):code(c){} const char* what() const noexcept override { return "MyErr"; } };
struct Base { virtual ~Base(){} virtual std::string name() const = 0; };
struct A : Base { std::string name() const override { return "A"; } };
struct B : Base { std::string name() const override { return "B"; } };
struct Global { Global(){ std::cout << "Global ctor\n"; } ~Global(){ std::cout << "Global dtor\n"; } } g;
thread_local std::string tl = "tl-init";
struct TLObj { TLObj(){ std::cout << "TLObj ctor\n"; } ~TLObj(){ std::cout << "TLObj dtor\n"; } int v = 5; };
thread_local TLObj tlo;
__attribute__((noinline)) void thrower(int x) { if (x > 2) throw MyErr(x); if (x == 2) throw std::runtime_error("two"); }
int main() {
  for (int i = 1; i <= 3; i++) {
    try { thrower(i); std::cout << "no throw " << i << "\n"; }
    catch (const MyErr& e) { std::cout << "caught " << e.what() << " " << e.code << "\n"; }
    catch (const std::exception& e) { std::cout << "caught std " << e.what() << "\n"; }
  }
  std::vector<Base*> v{new A, new B};
  for (auto* b : v) { std::cout << b->name() << "\n"; delete b; }
  std::map<std::string,int> m{{"x",1},{"y",2}};
  for (auto& [k,val] : m) std::cout << k << "=" << val << "\n";
  tl += "+main"; std::cout << tl << " " << tlo.v << "\n";
  return 0;
}
