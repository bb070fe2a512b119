/*
 * Private to the sandbox: what the base environment (lua_sandbox.c) and
 * require (lua_require.c) share. Loop thread only; MAY_RAISE as in
 * lua_internal.h. Nothing else in engine/lua should need these: the rest
 * of the runtime uses sandbox_push_env and sandbox_load_file.
 */
#ifndef AMI_LUA_SANDBOX_INTERNAL_H
#define AMI_LUA_SANDBOX_INTERNAL_H

#include "lua/lua_internal.h"

/* Raise the refusal listed under name ("io", "require(\"os\")"): what was refused, why, what instead. */
MAY_RAISE int sandbox_refuse(lua_State *L, const char *name);
/* Push the real package.loaded[name] (nil if absent); never hand it to scripts except ami. */
void sandbox_push_loaded_module(lua_State *L, const char *name);
/* Push a fresh global table over the base: a script's (SCRIPT = script) or a module's (NULL). */
MAY_RAISE void sandbox_push_own_env(lua_State *L, script_t *sc, const char *script);
/* Load a Lua source file (never bytecode) as a chunk; nonzero and the message pushed on failure. */
MAY_RAISE int sandbox_load_source_file(lua_State *L, const char *path);
/* The scripts' require(name), a C closure with sc as upvalue 1 (lua_require.c). */
MAY_RAISE int sandbox_require(lua_State *L);

#endif
