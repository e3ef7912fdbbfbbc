# The signoff image: worker, gateway and the example service all run from it
# (see docker-compose.yml). Secrets are never baked in; they arrive as environment variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SIGNOFF_STATE_DIR=/var/lib/signoff

# git: the gitops deployment target commits manifests to a Git repository; openssh-client signs
# those commits (SIGNOFF_GITOPS_SIGNING_KEY); kubernetes-client's `kubectl kustomize` checks a
# kustomize overlay before signoff commits it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates bubblewrap openssh-client kubernetes-client \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first so code edits do not reinstall them.
COPY pyproject.toml README.md ./
COPY signoff/ signoff/
COPY workflows/ workflows/
COPY activities/ activities/
COPY workers/ workers/
COPY approvals/ approvals/
RUN pip install .

# Non-package data the processes read at run time.
COPY policies/ policies/
COPY runbooks/ runbooks/
COPY examples/ examples/
# The example service's "good" artifact (a deterministic zipapp) for the compose `checkout`
# service; `python dist/checkout-good.pyz --port N` runs it.
RUN python examples/service/build.py --flavour good --out dist/checkout-good.pyz

RUN useradd --system --uid 10001 --home-dir /var/lib/signoff signoff \
    && mkdir -p /var/lib/signoff /var/lib/signoff-audit \
    && chown -R signoff /var/lib/signoff /var/lib/signoff-audit
USER signoff

EXPOSE 8700
CMD ["signoff", "worker"]
