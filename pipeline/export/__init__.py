"""Export: mobile artifacts of the students (ONNX, ExecuTorch, Core ML), verified
against PyTorch, with a model card each. ``graph`` builds the inference networks,
``formats`` writes and runs the files, ``card`` describes them, ``stage`` runs it all."""
