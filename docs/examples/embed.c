/*
 * embed.c: ami-engine's C library (libami) inside your own libev program.
 *
 * It connects to one Asterisk server, prints the first Newchannel events,
 * lists the server's channels with CoreShowChannels once logged in, and
 * stops cleanly (Logoff) after a few seconds. No Lua: this is the core the
 * engine itself is built on.
 *
 * Build against the installed library:
 *   cc -o embed embed.c $(pkg-config --cflags --libs ami-engine) -lev
 * (libami links libev itself; -lev is for the ev_* calls this program makes.)
 * Try it against the simulator that ships with the engine:
 *   ami-sim --nodes 1 --base-port 15038 --cps 5 &
 *   ./embed --port 15038 --secret s3cret --seconds 3          # runs the loop with ev_run
 *   ./embed --port 15038 --secret s3cret --seconds 3 --poll   # drives it with ami_client_poll
 * Exit status 0 when it logged in, saw an event and got its action's answer.
 *
 * The two ways to drive the client:
 *   - the client joins your libev loop (cfg.loop): its watchers run inside
 *     your ev_run, beside your own;
 *   - ami_client_poll(): one pass that never blocks, from whatever main loop
 *     you have (here a loop that also does its own work between passes).
 * Every callback runs on that loop's thread, from inside ev_run or the poll.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep */

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ami/ami.h>
#include <ev.h>

typedef struct app {
    ami_client_t *client;
    struct ev_loop *loop;
    ev_timer stop_timer;
    bool logged_in, answered, stopping;
    unsigned long events;
} app_t;

typedef struct options {
    const char *host, *username, *secret;
    long port;
    double seconds;
    bool poll;
} options_t;

/* An event from any server: messages are borrowed for the call. */
static void on_newchannel(void *ud, const char *server_key, const ami_msg_t *msg)
{
    app_t *app = ud;
    if (++app->events > 3)
        return;
    const char *channel = ami_msg_get(msg, "Channel"), *state = ami_msg_get(msg, "ChannelStateDesc");
    printf("event %s on %s: %s (%s)\n", ami_msg_name(msg), server_key, channel ? channel : "?",
           state ? state : "?");
}

/* The answer to CoreShowChannels: a list (RESPONSE, ITEMs, then DONE), or FAILED. */
static void on_channels(void *ud, const ami_pending_note_t *note)
{
    app_t *app = ud;
    if (note->signal == AMI_PENDING_DONE) {
        app->answered = true;
        printf("action %s: done, %u channels listed\n", note->action, note->items);
    } else if (note->signal == AMI_PENDING_FAILED) {
        printf("action %s: failed (%s): %s\n", note->action, ami_status_name(note->status), note->reason);
    }
}

static void list_channels(app_t *app, const char *server_key)
{
    ami_action_req_t req = {.name = "CoreShowChannels", .timeout_ms = 5000};
    ami_err_t err;
    if (ami_client_send(app->client, server_key, &req, on_channels, app, NULL, &err) < 0)
        printf("action CoreShowChannels refused (%s): %s\n", ami_status_name(err.code), err.msg);
}

static void on_state(void *ud, const char *server_key, ami_conn_state_t from, ami_conn_state_t to,
                     const char *reason)
{
    app_t *app = ud;
    printf("server %s: %s -> %s%s%s\n", server_key, ami_conn_state_name(from), ami_conn_state_name(to),
           reason && *reason ? ": " : "", reason ? reason : "");
    if (to == AMI_CONN_CONNECTED) {
        app->logged_in = true;
        list_channels(app, server_key);
    }
    if (to == AMI_CONN_STOPPED && ami_client_stopped(app->client))
        ev_break(app->loop, EVBREAK_ALL);
}

/* Time is up: log off (each server gets 2 s for its Goodbye). */
static void on_stop_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    app_t *app = w->data;
    app->stopping = true;
    ami_client_stop(app->client, 2000);
}

static int add_server(app_t *app, const options_t *o)
{
    ami_server_options_t srv;
    ami_server_options_default(&srv);
    srv.server_key = "pbx1";
    srv.host = o->host; /* an IP address: hostnames are refused, nothing resolves on the loop */
    srv.port = (uint16_t)o->port;
    srv.username = o->username;
    srv.secret = o->secret;
    srv.heartbeat_interval_ms = 1000;
    ami_err_t err;
    if (ami_client_add_server(app->client, &srv, &err) < 0) {
        fprintf(stderr, "embed: %s\n", err.msg);
        return -1;
    }
    if (!ami_client_subscribe(app->client, "Newchannel", on_newchannel, app, &err)) {
        fprintf(stderr, "embed: %s\n", err.msg);
        return -1;
    }
    return ami_client_on_state(app->client, on_state, app);
}

/* Your own main loop: it does its work and gives the client a pass each round. */
static void run_with_poll(app_t *app)
{
    const struct timespec pause = {0, 1000000}; /* this program's "other work" */
    while (!app->stopping || !ami_client_stopped(app->client)) {
        ami_client_poll(app->client);
        nanosleep(&pause, NULL);
    }
}

static void report(const app_t *app)
{
    double events = 0;
    ami_metrics_value(ami_client_metrics(app->client), "ami_events_received_total",
                      (const char *const[]){"server_key", "pbx1", NULL}, &events);
    size_t text = ami_metrics_render_text(ami_client_metrics(app->client), NULL, 0);
    printf("summary: logged_in=%s newchannel_events=%lu events_received=%.0f answered=%s metrics_text=%zu bytes\n",
           app->logged_in ? "yes" : "no", app->events, events, app->answered ? "yes" : "no", text);
}

static int run(const options_t *o)
{
    app_t app = {.loop = ev_loop_new(EVFLAG_AUTO)};
    ami_logger_config_t lc;
    ami_logger_config_default(&lc);
    lc.level = AMI_LOG_WARN;
    ami_logger_t *log = ami_logger_new(&lc);
    ami_client_config_t cfg;
    ami_client_config_default(&cfg);
    cfg.loop = app.loop; /* the client only adds watchers to it */
    cfg.log = log;
    ami_err_t err;
    app.client = ami_client_new(&cfg, &err);
    if (!app.client) {
        fprintf(stderr, "embed: %s\n", err.msg);
        return 1;
    }
    int rc = 1;
    if (add_server(&app, o) == 0) {
        ev_timer_init(&app.stop_timer, on_stop_timer, o->seconds, 0.);
        app.stop_timer.data = &app;
        ev_timer_start(app.loop, &app.stop_timer);
        ami_client_start(app.client);
        if (o->poll)
            run_with_poll(&app);
        else
            ev_run(app.loop, 0);
        report(&app);
        rc = app.logged_in && app.events > 0 && app.answered ? 0 : 1;
    }
    ev_timer_stop(app.loop, &app.stop_timer);
    ami_client_free(app.client);
    ami_logger_free(log);
    ev_loop_destroy(app.loop);
    return rc;
}

static int usage(FILE *out, int rc)
{
    fprintf(out, "usage: embed [--host IP] [--port N] [--username U] [--secret S] [--seconds S] [--poll]\n"
                 "Connects to one Asterisk server with libami %s; see the top of embed.c.\n",
            ami_version());
    return rc;
}

/* 0: run; 1: --help printed; 2: a usage error printed. */
static int parse_args(int argc, char **argv, options_t *o)
{
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'H'},     {"port", required_argument, NULL, 'p'},
        {"username", required_argument, NULL, 'u'}, {"secret", required_argument, NULL, 's'},
        {"seconds", required_argument, NULL, 't'},  {"poll", no_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    *o = (options_t){.host = "127.0.0.1", .port = 5038, .username = "engine", .secret = "s3cret", .seconds = 3};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'H': o->host = optarg; break;
        case 'p': o->port = strtol(optarg, NULL, 10); break;
        case 'u': o->username = optarg; break;
        case 's': o->secret = optarg; break;
        case 't': o->seconds = strtod(optarg, NULL); break;
        case 'P': o->poll = true; break;
        case 'h': usage(stdout, 0); return 1;
        default: return usage(stderr, 2);
        }
    }
    if (optind < argc || o->port < 1 || o->port > 65535 || !(o->seconds > 0 && o->seconds < 3600))
        return usage(stderr, 2);
    return 0;
}

int main(int argc, char **argv)
{
    options_t o;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    printf("libami %s (built against %s)\n", ami_version(), AMI_VERSION_STRING);
    return run(&o);
}
