# trackrelay: one image for every component (order service, relay, forwarder,
# analytics simulator, operator, migrations); the command picks the role.
#
#   podman build -t trackrelay .                  # on the official Python slim image
#   podman build --build-arg BASE_IMAGE=... .     # on another base with python3 (>= 3.11) and venv
#
# A build that reaches PyPI through a TLS proxy can pass its CA bundle as a
# build secret: --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
# the locked dependencies first (a layer that survives source changes), then the project's wheel
COPY requirements.lock ./
RUN --mount=type=secret,id=ca,required=false \
    set -eu; \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    python3 -m venv /opt/trackrelay; \
    /opt/trackrelay/bin/pip install --no-cache-dir --disable-pip-version-check --quiet \
        --requirement requirements.lock
COPY pyproject.toml README.md ./
COPY services ./services
COPY operator ./operator
RUN --mount=type=secret,id=ca,required=false \
    set -eu; \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    /opt/trackrelay/bin/pip wheel --no-cache-dir --disable-pip-version-check --quiet \
        --no-deps --wheel-dir /tmp/wheels .; \
    /opt/trackrelay/bin/pip install --no-cache-dir --disable-pip-version-check --quiet \
        --no-deps /tmp/wheels/trackrelay-*.whl; \
    /opt/trackrelay/bin/pip check; \
    /opt/trackrelay/bin/trackrelay --help >/dev/null; \
    /opt/trackrelay/bin/python -m pip uninstall --yes --quiet pip setuptools; \
    /opt/trackrelay/bin/python -c "import trackrelay.cli, trackrelay_operator"

FROM ${BASE_IMAGE}
# the environment without pip and setuptools: nothing installs at run time
COPY --from=build /opt/trackrelay /opt/trackrelay
# a fixed non-root user with no home and no shell; the root filesystem can be read-only
RUN echo "trackrelay:x:10001:10001:trackrelay:/nonexistent:/usr/sbin/nologin" >> /etc/passwd \
    && echo "trackrelay:x:10001:" >> /etc/group
ENV PATH=/opt/trackrelay/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRACKRELAY_HOST=0.0.0.0 \
    TRACKRELAY_DATA_DIR=/tmp/trackrelay
USER 10001:10001
EXPOSE 8000 8100 9100
ENTRYPOINT ["trackrelay"]
CMD ["orders"]
