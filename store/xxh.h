/*
 * xxh.h - xxHash as every digest of pyshelf takes it: XXH3 with the state
 * on the stack, through libxxhash's run-time x86 dispatch where configure
 * found it (AVX2 or AVX-512 rather than SSE2; the digests do not change).
 */
#ifndef PYSHELF_XXH_H
#define PYSHELF_XXH_H

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#if defined(HAVE_XXH_X86DISPATCH_H) && \
    defined(HAVE_XXH3_128BITS_UPDATE_DISPATCH)
#include <xxh_x86dispatch.h>
#endif

#endif
