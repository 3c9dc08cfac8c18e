"""An OTLP/HTTP traces receiver for tests/external/otel.rs: decodes each POST body as an
`ExportTraceServiceRequest` with the `opentelemetry-proto` package (protobuf), answers
as a collector does, and prints one JSON line per span on stdout. A body that does not
decode is answered 400 and printed as a `decode_error` line, so the test sees it.

Prints `{"listening": <port>}` first. Environment: `PG_OTLP_STATUS`, the status to answer
(default 200), to play a collector that refuses.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

STATUS = int(os.environ.get("PG_OTLP_STATUS", "200"))


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def emit(line):
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as e:
            emit({"decode_error": str(e), "path": self.path})
            self.send_response(400)
            self.end_headers()
            return
        for rs in request.resource_spans:
            resource = {kv.key: value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    emit(
                        {
                            "path": self.path,
                            "content_type": self.headers.get("content-type"),
                            "resource": resource,
                            "scope": ss.scope.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "name": span.name,
                            "kind": Span.SpanKind.Name(span.kind),
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "flags": span.flags,
                            "status": span.status.code,
                            "status_message": span.status.message,
                            "attributes": {
                                kv.key: value(kv.value) for kv in span.attributes
                            },
                        }
                    )
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(STATUS)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
emit({"listening": server.server_address[1]})
server.serve_forever()
