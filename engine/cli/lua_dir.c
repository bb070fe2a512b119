/* Where the engine's own lua/ modules are: $AMI_ENGINE_LUA_DIR when set;
 * else the installed folder beside the binary (<bin>/../share/ami-engine/lua,
 * found from /proc/self/exe, so an unpacked package works wherever it is);
 * else the source tree the binary was built from (AMI_LUA_DIR). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The installed lua/ folder relative to the running binary, or 0. */
static int installed_dir(char *out, size_t size)
{
#ifdef AMI_LUA_DIR_FROM_BIN
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return 0;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return 0;
    *slash = '\0';
    char joined[PATH_MAX + sizeof AMI_LUA_DIR_FROM_BIN + 1];
    snprintf(joined, sizeof joined, "%s/%s", exe, AMI_LUA_DIR_FROM_BIN);
    char resolved[PATH_MAX];
    if (!realpath(joined, resolved) || !is_dir(resolved) || strlen(resolved) >= size)
        return 0;
    snprintf(out, size, "%s", resolved);
    return 1;
#else
    (void)out;
    (void)size;
    return 0;
#endif
}

/* Sized so the require() path below always holds the folder twice. */
#define LUA_DIR_MAX 560

const char *ami_cli_engine_lua_dir(void)
{
    static char dir[LUA_DIR_MAX];
    const char *env = getenv("AMI_ENGINE_LUA_DIR");
    if (env && *env)
        snprintf(dir, sizeof dir, "%s", env);
    else if (!installed_dir(dir, sizeof dir))
        snprintf(dir, sizeof dir, "%s", AMI_LUA_DIR);
    return dir;
}

const char *ami_cli_engine_lua_path(void)
{
    static char path[2 * LUA_DIR_MAX + 32];
    const char *dir = ami_cli_engine_lua_dir();
    snprintf(path, sizeof path, "%s/?.lua;%s/?/init.lua", dir, dir);
    return path;
}
