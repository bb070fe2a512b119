/*
 * Reloading when a script file changes: an inotify watch on the scripts
 * folder, debounced so that an editor's burst of writes (or a deployment
 * copying many files) gives one reload, after the folder is quiet.
 */
#include <errno.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "lua/lua_internal.h"
#include "lua/lua_watch.h"

static void on_debounced(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    ami_lua_runtime_reload(t->data, "a script file changed", NULL);
}

static bool is_script_name(const struct inotify_event *e)
{
    size_t len = e->len ? strlen(e->name) : 0;
    return len > 4 && e->name[0] != '.' && strcmp(e->name + len - 4, ".lua") == 0;
}

static void on_inotify(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    ami_lua_runtime_t *rt = w->data;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool relevant = false;
    ssize_t n;
    while ((n = read(rt->inotify_fd, buf, sizeof buf)) > 0) {
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *e = (struct inotify_event *)(void *)p;
            relevant = relevant || is_script_name(e);
            p += sizeof *e + e->len;
        }
    }
    if (!relevant)
        return;
    ev_timer_stop(loop, &rt->debounce);
    ev_timer_set(&rt->debounce, rt->cfg.reload_debounce_ms / 1000.0, 0.);
    ev_timer_start(loop, &rt->debounce);
}

void watch_start(ami_lua_runtime_t *rt)
{
    rt->inotify_fd = -1;
    ev_init(&rt->debounce, on_debounced);
    rt->debounce.data = rt;
    if (!rt->cfg.watch_scripts || !rt->scripts_dir)
        return;
    rt->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (rt->inotify_fd < 0 ||
        inotify_add_watch(rt->inotify_fd, rt->scripts_dir,
                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE) < 0) {
        AMI_LOG(rt->log, AMI_LOG_WARN, "cannot watch the scripts folder; reload with SIGHUP",
                AMI_F_STR("dir", rt->scripts_dir), AMI_F_STR("error", strerror(errno)));
        if (rt->inotify_fd >= 0)
            close(rt->inotify_fd);
        rt->inotify_fd = -1;
        return;
    }
    ev_io_init(&rt->inotify_io, on_inotify, rt->inotify_fd, EV_READ);
    rt->inotify_io.data = rt;
    ev_io_start(rt->loop, &rt->inotify_io);
}

void watch_stop(ami_lua_runtime_t *rt)
{
    ev_timer_stop(rt->loop, &rt->debounce);
    if (rt->inotify_fd < 0)
        return;
    ev_io_stop(rt->loop, &rt->inotify_io);
    close(rt->inotify_fd);
    rt->inotify_fd = -1;
}
