# byok in a container: `byok serve` as a non-root user, its state in a volume.
#
#   docker build -t byok .
#   docker run -d --name byok --stop-timeout 120 \
#       -p 127.0.0.1:4747:4747 -p 127.0.0.1:4748:4748 -v byok-data:/var/lib/byok byok
#   docker exec byok byok org list      # admin commands find the operator token in the volume
#
# Settings: environment variables (-e BYOK_DATABASE_URL=…), flags after the image name
# (`docker run … byok --database-url …`), or a config file:
#   -v "$PWD/byok.toml:/etc/byok/byok.toml:ro" -e BYOK_CONFIG=/etc/byok/byok.toml
# The listen addresses and the data directory are set below as environment variables,
# which win over the file: change them with -e, not in byok.toml.
#
# The admin listener (4748) takes admin tokens over plain HTTP: publish it on loopback
# (as above) or a private network only. Probes: GET /healthz and /readyz on 4748.
# A bind mount instead of the volume must be an empty directory owned by 65532:65532,
# or one byok already initialized (mode 0700).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p byok --bin byok \
 && install -D -m 0755 target/release/byok /out/byok \
 && install -d -m 0700 /out/state/byok

# glibc and libgcc, nothing else: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/byok /usr/local/bin/byok
# The data directory is copied as an entry of a tree, not as the target, so that --chown
# and its mode 0700 apply to the directory itself.
COPY --from=build --chown=65532:65532 /out/state/ /var/lib/
ENV BYOK_DATA_DIR=/var/lib/byok \
    BYOK_ADMIN_ADDR=0.0.0.0:4748 \
    BYOK_PROXY_ADDR=0.0.0.0:4747
VOLUME ["/var/lib/byok"]
# 4747: the data plane (applications' SDKs); 4748: the admin API.
EXPOSE 4747 4748
USER 65532:65532
# SIGTERM (docker stop) drains in-flight calls and streams: give it time (--stop-timeout).
ENTRYPOINT ["/usr/local/bin/byok", "serve"]
