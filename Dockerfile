# kpath-agent image for clusters (deploy/daemonset, docs/install.md):
#   docker build -t REGISTRY/kpath-agent:TAG .
# Static binary (CGO_ENABLED=0) on distroless/static: no shell, no libc.
# The lab, which has no Docker, builds the same image with `make image-lab`.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/kpath-agent ./cmd/agent

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/kpath-agent /usr/local/bin/kpath-agent
# USER 0: loading BPF programs and attaching uprobes needs CAP_BPF,
# CAP_PERFMON and CAP_SYS_PTRACE; the DaemonSet runs as root with exactly
# those capabilities (all others dropped, not privileged). distroless's
# default user is root already; this makes it explicit.
USER 0:0
ENTRYPOINT ["/usr/local/bin/kpath-agent"]
