/* remjit repl: declarations every C cell sees. */
typedef __SIZE_TYPE__ __remjit_size_t;
void __remjit_flush(void);
void __remjit_show_c(const void *, __remjit_size_t, int, const char *);
#define __REMJIT_TYPE(v) _Generic((v), _Bool: "_Bool", char: "char", signed char: "signed char", \
  unsigned char: "unsigned char", short: "short", unsigned short: "unsigned short", int: "int", \
  unsigned int: "unsigned int", long: "long", unsigned long: "unsigned long", \
  long long: "long long", unsigned long long: "unsigned long long", float: "float", \
  double: "double", long double: "long double", char *: "char *", const char *: "const char *", \
  signed char *: "signed char *", unsigned char *: "unsigned char *", \
  const unsigned char *: "const unsigned char *", void *: "void *", const void *: "const void *", \
  int *: "int *", const int *: "const int *", unsigned *: "unsigned int *", long *: "long *", \
  unsigned long *: "unsigned long *", long long *: "long long *", short *: "short *", \
  float *: "float *", double *: "double *", const double *: "const double *", \
  char **: "char **", const char **: "const char **", void **: "void **", int **: "int **", \
  default: (const char *)0)
