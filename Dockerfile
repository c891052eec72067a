# guidance-server: one replica. Build: docker build -t guidance-server .
# Run:   docker run -p 8000:8000 -e GUIDANCE_SERVER_API_KEYS=<key> guidance-server
# (without keys it refuses to start on 0.0.0.0; GUIDANCE_SERVER_ALLOW_OPEN=true serves an open API).
FROM python:3.11-slim AS build
# The exact versions of deploy/requirements.lock first (a layer that changes only with the lock),
# then the project itself with --no-deps: the image never picks up a release the tests have not seen.
RUN python -m venv /opt/guidance
COPY deploy/requirements.lock /tmp/requirements.lock
RUN /opt/guidance/bin/pip install --no-cache-dir -r /tmp/requirements.lock
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY core ./core
COPY service ./service
# the worker-side client package, which the server imports the wire format from
COPY client ./client
RUN /opt/guidance/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
    && /opt/guidance/bin/pip check

FROM python:3.11-slim
# Only the venv is copied: no wheels, sources or build files in the image's layers. The embedded
# tokenizer data ships inside the package (core/data): nothing is fetched at run time.
COPY --from=build /opt/guidance /opt/guidance
RUN useradd --system --uid 10001 --no-create-home guidance
USER guidance
ENV PATH=/opt/guidance/bin:$PATH \
    GUIDANCE_SERVER_HOST=0.0.0.0 \
    GUIDANCE_SERVER_PORT=8000
EXPOSE 8000
# /readyz answers 503 until the tokenizers are loaded and while draining after SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"
STOPSIGNAL SIGTERM
CMD ["guidance-server"]
