# gitlab-pypi-proxy: docker build -t gitlab-pypi-proxy .
# Config comes from a mounted file, secrets from the environment, the cache from a volume:
#   docker run -p 8080:8080 -v "$PWD/proxy.toml:/etc/gitlab-pypi-proxy/config.toml:ro" \
#     -v pypi-cache:/var/cache/gitlab-pypi-proxy -e GITLAB_TOKEN gitlab-pypi-proxy
# Every command reads the config that GITLAB_PYPI_PROXY_CONFIG names, so other commands run as
#   docker run --rm -v ... gitlab-pypi-proxy check-config   (or prefetch --lock ..., cache stats)
# A self-hosted GitLab with a CA of its own: mount a PEM bundle that also holds the public CAs
# and set SSL_CERT_FILE to it (it replaces the system trust store).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GITLAB_PYPI_PROXY_CONFIG=/etc/gitlab-pypi-proxy/config.toml

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gitlab_pypi_proxy ./gitlab_pypi_proxy
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 10001 proxy \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin proxy \
    && mkdir -p /var/cache/gitlab-pypi-proxy /etc/gitlab-pypi-proxy \
    && chown proxy:proxy /var/cache/gitlab-pypi-proxy

# [cache] directory in the mounted config must be this path
VOLUME ["/var/cache/gitlab-pypi-proxy"]
USER 10001:10001
WORKDIR /var/cache/gitlab-pypi-proxy
EXPOSE 8080

# slim images have no curl: ask /healthz with the Python that runs the proxy
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["gitlab-pypi-proxy"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
