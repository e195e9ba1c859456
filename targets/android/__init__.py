"""Android: LiteRT on phones. Today its bench runners (LiteRT on this host, which runs the same CPU
kernels as an Android CPU; a device over adb); packaging (`--target android`) comes with issue 13."""
