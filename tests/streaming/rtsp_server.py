"""Loopback RTSP server for tests: serves one video file at rtsp://127.0.0.1:PORT/live.

Run with the system Python (``/usr/bin/python3``), which has GStreamer's introspection
bindings (Debian: python3-gi gir1.2-gst-rtsp-server-1.0). Usage: ``rtsp_server.py PORT VIDEO``.
Prints ``READY`` once listening; the media loops so a reader never sees end-of-stream.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

port, video = sys.argv[1], sys.argv[2]
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
# The stream plays at the file's frame rate (the pipeline is clocked), like a camera.
factory.set_launch(f"( filesrc location={video} ! avidemux ! jpegdec ! videoconvert ! "
                   "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! rtph264pay name=pay0 pt=96 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/live", factory)
server.attach(None)
print("READY", flush=True)
GLib.MainLoop().run()
