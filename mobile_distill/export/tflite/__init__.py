"""TFLite, the format with the most to it: the converter (``converter.py``: litert-torch, float32,
float16 and the int8 family; the format module ``formats.py`` registers), the mixed-precision search
and the per-op quantisation model behind it (``mixed_precision.py``), and the per-layer sensitivity
report (``quant_report.py``, ``mdistill quant-report``)."""
