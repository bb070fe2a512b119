/*
 * AMI_API marks the functions of the public API: the only symbols the
 * shared library (libami.so) and the installed static archive (libami.a)
 * export. Everything else in the library is compiled with hidden
 * visibility, so an embedder's own `push_error` or `sched_resume` can never
 * clash with one of the engine's internal functions.
 *
 * The mark sits on the declarations in the headers of include/ami/; a
 * definition that sees its declaration inherits it, so the .c files carry
 * no mark of their own.
 */
#ifndef AMI_EXPORT_H
#define AMI_EXPORT_H

#if defined(__GNUC__) || defined(__clang__)
#define AMI_API __attribute__((visibility("default")))
#else
#define AMI_API
#endif

#ifdef __cplusplus
#define AMI_BEGIN_DECLS extern "C" {
#define AMI_END_DECLS }
#else
#define AMI_BEGIN_DECLS
#define AMI_END_DECLS
#endif

#endif
