"""Export: the inference networks and mobile artifacts of the students (ONNX, ExecuTorch,
Core ML). ``graph`` builds the student's inference network, ``teacher_graph`` the
teacher's (benchmarks), ``formats`` writes and runs the files, ``card`` describes them,
``registry`` publishes one; the export stage (pipeline/stages/export.py) runs it all."""
