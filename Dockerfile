# One image for every role of the demo and of a small deployment:
#   gslb serve -c /etc/gslb/gslb.yaml
#   regional-lb serve -c /etc/regional-lb/lb.yaml
#   python -m deploy.demo_app --listen 0.0.0.0:8000 --name NAME --region REGION --redis URL
# The package is installed in editable mode from /app so the bundled GeoIP database (geo_data/)
# stays where gslb looks for it, and `python -m deploy.*` works from the working directory.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# dependencies first: this layer is rebuilt only when pyproject.toml changes
COPY pyproject.toml README.md ./
RUN mkdir -p gslb regional_lb && touch gslb/__init__.py regional_lb/__init__.py \
 && pip install -e . \
 && rm -rf gslb regional_lb

COPY gslb ./gslb
COPY regional_lb ./regional_lb
COPY geo_data ./geo_data
COPY deploy ./deploy
RUN pip install --no-deps -e . \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin lb \
 && python -c "import gslb.cli, regional_lb.cli, deploy.demo_app"

USER lb
# DNS (53 with the compose sysctl, or 1053), GSLB admin, LB listener and admin, demo app
EXPOSE 53/udp 53/tcp 1053/udp 1053/tcp 8053 8080 9080 8000
STOPSIGNAL SIGTERM
CMD ["gslb", "--help"]
