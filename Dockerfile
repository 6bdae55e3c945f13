# syntax=docker/dockerfile:1
# One image, two binaries: `stowage controller|node|provisioner|...`, and `stowage-node`,
# the node plugin alone, which the DaemonSet runs (it maps a fraction of the code).

FROM rust:1.95-bookworm AS build
# libclang-dev: loopdev-3 generates its ioctl bindings with bindgen.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p stowage --bin stowage \
    && cargo build --profile node --locked -p stowage --bin stowage-node \
    && install -D -m 0755 target/release/stowage /out/stowage \
    && install -D -m 0755 target/node/stowage-node /out/stowage-node

FROM debian:bookworm-slim
# The node plugin's needs: mount helpers and NFS client tools for kernel NFS mounts,
# e2fsprogs for image volumes (mkfs.ext4, e2fsck, resize2fs), xfsprogs for quota volumes
# (xfs_quota: project ids and limits), util-linux for losetup and
# fsfreeze (group snapshots of mounted image volumes).
RUN apt-get update \
    && apt-get install -y --no-install-recommends nfs-common e2fsprogs xfsprogs util-linux ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/stowage /out/stowage-node /usr/local/bin/
# Non-root by default (controller, central provisioner); the node DaemonSet runs as root.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/stowage"]
CMD ["--help"]
