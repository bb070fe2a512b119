#include "fixtures.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

fixture_t fixture_load(const char *name, const char *ext)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s%s", AMI_FIXTURE_DIR, name, ext);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fixture %s missing\n", path);
        abort();
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    fixture_t fx = {malloc((size_t)size + 1), (size_t)size};
    if (!fx.data || fread(fx.data, 1, (size_t)size, f) != (size_t)size)
        abort();
    fx.data[size] = '\0';
    fclose(f);
    return fx;
}

void fixture_free(fixture_t *f)
{
    free(f->data);
    f->data = NULL;
    f->len = 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

const char *const *fixture_names(void)
{
    static char *names[128];
    static int loaded;
    if (loaded)
        return (const char *const *)names;
    DIR *d = opendir(AMI_FIXTURE_DIR);
    if (!d)
        abort();
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n + 1 < sizeof names / sizeof names[0]) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".ami") == 0)
            names[n++] = strndup(e->d_name, len - 4);
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp_names);
    names[n] = NULL;
    loaded = 1;
    return (const char *const *)names;
}
