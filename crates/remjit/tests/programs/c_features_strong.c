/* Strong and common definitions that override c_features.c's weak and common ones. */
int weak_fn(void) { return 2; }
int common_var;
