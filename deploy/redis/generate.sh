#!/usr/bin/env bash
# Prints deploy/redis/acl.example.conf: the Redis ACL file (Redis 7.0 or later) of cluster
# `default` with nodes node-1..node-3, every user made by `ebb acl` with the placeholder password
# >CHANGE-ME, and the default user off. deploy/check.sh checks the file is what this prints.
#
#   deploy/redis/generate.sh [path/to/ebb] >deploy/redis/acl.example.conf
set -euo pipefail
ebb=${1:-ebb}
cluster=default

echo "user default off"
for role in coordinator trigger viewer; do
    "$ebb" --cluster "$cluster" acl --format aclfile --role "$role"
done
"$ebb" --cluster "$cluster" acl --format aclfile --role node --node node-1 --node node-2 --node node-3
