"""Android: LiteRT on phones. Packaging (`edgeport package --target android`: target.py, packager.py)
writes the model variants (variants.py) with TFLite metadata (metadata.py, describe.py) and a
serving_default signature (signature.py); the bench runners run LiteRT on this host, which runs the same
CPU kernels as an Android CPU, and on a device over adb."""
