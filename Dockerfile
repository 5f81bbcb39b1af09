# tiktok-connector as a container: the CLI is the entrypoint, the project (connector.yml, queries/,
# mappings/ and the DuckDB file holding the warehouse and the state tables) lives on the /project volume.
#
#   docker build -t tiktok-connector .                                  # add --build-arg EXTRAS=snowflake
#   docker run --rm -v tiktok-project:/project tiktok-connector init .
#   docker run --rm -v tiktok-project:/project -e TIKTOK_ACCESS_TOKEN tiktok-connector sync
#
# A host folder works too: -v "$PWD:/project" --user "$(id -u):$(id -g)" (the folder must be writable).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE CHANGELOG.md ./
COPY connector ./connector
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
# Extras to install, e.g. "snowflake", "postgres" or "all" (empty: DuckDB only).
ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY --from=build /wheels /wheels
RUN wheel="$(ls /wheels/*.whl)" \
    && pip install "${wheel}${EXTRAS:+[$EXTRAS]}" \
    && rm -rf /wheels \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin connector \
    && mkdir /project \
    && chown connector:connector /project
USER connector
WORKDIR /project
VOLUME ["/project"]
ENTRYPOINT ["tiktok-connector"]
CMD ["--help"]
