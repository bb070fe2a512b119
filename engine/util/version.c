/* The library's version at run time (an embedder may run a newer libami than
 * the headers it compiled against). */
#include <ami/version.h>

const char *ami_version(void)
{
    return AMI_VERSION_STRING;
}
