#!/bin/sh
echo "coverage is not supported in the offline moelab workspace" >&2
exit 1
