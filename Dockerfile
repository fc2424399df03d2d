# One image for every process; docker-compose.yml picks the process with `command`.
FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package needs: not .venv, .git or the caches of the host checkout.
COPY pyproject.toml constraints.txt ./
COPY audit ./audit
COPY catalog ./catalog
COPY console ./console
COPY contracts ./contracts
COPY engine ./engine
COPY harness ./harness
COPY infra ./infra
COPY orchestrator ./orchestrator
COPY sagas ./sagas
COPY workers ./workers
COPY sagactl ./sagactl
COPY client ./client

RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin saga

USER saga

# Overridden per service in docker-compose.yml (python -m workers <service>, python -m console).
CMD ["python", "-m", "orchestrator"]
