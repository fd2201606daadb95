#!/bin/sh
# embed-py.sh NAME FILE - print a C file defining `const char NAME[]` with
# the bytes of FILE and a NUL, and `const size_t NAME_len`, their number
# without it (used to compile exec/backend.py into pyshelfd).
set -e
name=$1
file=$2
echo "/* generated from $(basename "$file") by embed-py.sh: do not edit */"
echo "#include <stddef.h>"
echo "const char $name[] = {"
od -An -v -tx1 "$file" | sed -e 's/ *\([0-9a-f][0-9a-f]\)/0x\1,/g'
echo "0x00 };"
echo "const size_t ${name}_len = sizeof $name - 1;"
