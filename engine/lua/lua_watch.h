/*
 * Private to engine/lua: reload on script file changes (inotify, debounced).
 * Loop thread only. Without watch_scripts or a scripts folder, start does
 * nothing but prepare stop.
 */
#ifndef AMI_LUA_WATCH_H
#define AMI_LUA_WATCH_H

#include "lua/lua_types.h"

void watch_start(ami_lua_runtime_t *rt);
void watch_stop(ami_lua_runtime_t *rt);

#endif
