"""The inspection loop behind ``edgecrack run``: source -> preprocess -> infer -> postprocess -> sinks.

One module per concern, imported from where it lives (this package imports nothing itself):

- :mod:`.config`: :class:`~.config.RunConfig`, :class:`~.config.SourceOptions`, and every option check.
- :mod:`.types`: frames, source events, per-frame results, run info and summary, the sink protocol.
- :mod:`.sources`: files, videos, cameras, streams, GStreamer (:func:`~.sources.open_source`).
- :mod:`.tiling`: tile geometry; :mod:`.postprocess`: crack maps, smoothing and the decision
  policy; :mod:`.render`: annotated frames.
- :mod:`.inspector`: frames in, results out (usable without sources and sinks).
- :mod:`.sinks`: console, logs, video, flagged frames, window.
- :mod:`.runner`: :func:`~.runner.run`, the loop with its threads and signals (:mod:`.workers`).
"""
