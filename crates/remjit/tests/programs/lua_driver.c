/* A driver over Debian's liblua5.4.a: closures, tables, string library, pcall/error. */
#include <stdio.h>
#include <lua5.4/lua.h>
#include <lua5.4/lauxlib.h>
#include <lua5.4/lualib.h>
static const char *script =
  "local t = {} for i = 1, 10 do t[i] = i * i end\n"
  "print(table.concat(t, ','))\n"
  "local function mk(n) return function(x) return x + n end end\n"
  "print(mk(5)(10), string.format('%.3f', math.pi), string.rep('ab', 3))\n"
  "print(pcall(function() error('boom') end))\n"
  "local s = 0 for w in string.gmatch('one two three', '%a+') do s = s + #w end print(s)\n";
int main(void) {
  lua_State *L = luaL_newstate(); luaL_openlibs(L);
  if (luaL_dostring(L, script)) { printf("error: %s\n", lua_tostring(L, -1)); return 1; }
  lua_close(L); return 0;
}
