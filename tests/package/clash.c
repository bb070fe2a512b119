/*
 * An embedder whose own functions happen to share names with functions
 * inside libami (the correlation registry's registry_table_find, the metrics
 * endpoint's http_client_new). Linked statically or dynamically, both the
 * program and the library must keep their own: the library exports only its
 * public API, so nothing clashes and nothing is interposed.
 */
#include <stdio.h>

#include <ami/ami.h>

int registry_table_find(int x);
int http_client_new(int x);

int registry_table_find(int x)
{
    return x + 1;
}

int http_client_new(int x)
{
    return x * 2;
}

int main(void)
{
    ami_client_config_t cfg;
    ami_client_config_default(&cfg);
    ami_err_t err;
    ami_client_t *c = ami_client_new(&cfg, &err);
    if (!c) {
        fprintf(stderr, "clash: %s\n", err.msg);
        return 1;
    }
    ami_server_options_t o;
    ami_server_options_default(&o);
    o.server_key = "pbx1";
    o.host = "127.0.0.1";
    o.username = "u";
    o.secret = "s";
    int added = ami_client_add_server(c, &o, &err);
    ami_client_free(c);
    if (added < 0 || registry_table_find(1) != 2 || http_client_new(3) != 6) {
        fprintf(stderr, "clash: the program's own functions were not called\n");
        return 1;
    }
    printf("clash: libami %s and the program keep their own functions\n", ami_version());
    return 0;
}
