# syntax=docker/dockerfile:1
#
# The flashsale image: the one static binary (operator and data plane) on
# distroless static, running as nonroot (65532:65532). Needs BuildKit.
#
#   docker build --build-arg VERSION=v1.2.3 -t flashsale-operator:v1.2.3 .
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg VERSION=v1.2.3 \
#     --build-arg REVISION="$(git rev-parse HEAD)" -t REGISTRY/flashsale-operator:v1.2.3 --push .
#
# The builder cross-compiles (it runs on the build platform), so multi-platform
# builds need no emulation. Without Docker, `make image` (hack/image) builds an
# image of the same layout into bin/flashsale-image.tar for
# `ctr -n k8s.io images import`.

FROM --platform=$BUILDPLATFORM golang:1.26 AS builder
WORKDIR /src
# Modules first, so that a source change does not download them again.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=bind,source=go.mod,target=go.mod \
    --mount=type=bind,source=go.sum,target=go.sum \
    go mod download
COPY . .
ARG TARGETOS TARGETARCH TARGETVARIANT
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH GOARM=${TARGETVARIANT#v} \
    go build -trimpath \
      -ldflags "-s -w -X github.com/flashsale-dev/flashsale-operator/runtime/cli.version=${VERSION}" \
      -o /out/flashsale .

FROM gcr.io/distroless/static:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="flashsale-operator" \
      org.opencontainers.image.description="flashsale: the FlashSale operator and its data plane (seckill API, order worker, rollback) in one binary" \
      org.opencontainers.image.source="https://github.com/flashsale-dev/flashsale-operator" \
      org.opencontainers.image.url="https://github.com/flashsale-dev/flashsale-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static:nonroot"
COPY --from=builder --chown=65532:65532 --chmod=0755 /out/flashsale /flashsale
USER 65532:65532
ENTRYPOINT ["/flashsale"]
