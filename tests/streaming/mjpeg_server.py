"""Loopback MJPEG-over-HTTP server for tests, like an IP camera's ``/video.mjpg``.

Usage: ``mjpeg_server.py PORT FPS STALL_AFTER IMAGE...``. Serves ``multipart/x-mixed-replace``
JPEG parts at FPS to every client on 127.0.0.1 (the request's user info and query are ignored,
like a camera that does not check them). With ``STALL_AFTER`` > 0 each connection goes silent
after that many frames but stays open: the client's ``read()`` blocks, the way a hung camera or
a half-dead radio link behaves. Prints ``READY`` once listening. Needs only OpenCV (no ffmpeg).
"""

import socket
import sys
import threading
import time

import cv2

port, fps, stall_after = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
parts = []
for p in sys.argv[4:]:
    ok, buf = cv2.imencode(".jpg", cv2.resize(cv2.imread(p), (256, 256)))
    data = buf.tobytes()
    parts.append(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data) + data + b"\r\n")
held = []


def serve(conn: socket.socket) -> None:
    try:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n"
                     b"Cache-Control: no-cache\r\n\r\n")
        i = 0
        while stall_after <= 0 or i < stall_after:
            conn.sendall(parts[i % len(parts)])
            i += 1
            time.sleep(1.0 / fps)
        held.append(conn)  # silent from now on, but the connection stays open
    except OSError:
        conn.close()


srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(64)
print("READY", flush=True)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
