"""Package marker: the C/C++ templates in this folder ship inside the wheel as `edgeport.firmware`."""
