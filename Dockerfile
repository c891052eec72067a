# guidance-server: one replica. Build: docker build -t guidance-server .
# Run:   docker run -p 8000:8000 guidance-server
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core ./core
COPY service ./service
# the worker-side client package, which the server imports the wire format from
COPY client ./client
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# the embedded tokenizer data ships inside the wheel (core/data): nothing is fetched at run time
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home guidance
USER guidance
ENV GUIDANCE_SERVER_HOST=0.0.0.0 \
    GUIDANCE_SERVER_PORT=8000
EXPOSE 8000
# /readyz answers 503 until the tokenizers are loaded and while draining after SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"
STOPSIGNAL SIGTERM
CMD ["guidance-server"]
