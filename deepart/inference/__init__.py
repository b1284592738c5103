"""A trained model leaving the repo and being used, top layer first:

    predict    `python -m deepart predict`: predictions (and attention / Grad-CAM pictures) for image files
    export     `python -m deepart export`: a run's model as an export folder (safetensors, config.json, card, ONNX)
    app        `python -m deepart app`: the web page (with a similar-paintings panel when given an index)
    index      `python -m deepart index`: embeddings of a collection, written in resumable chunks
    similar    `python -m deepart similar`: the paintings of an index most like an image
    evaluate   eval.py's work: a checkpoint, run dir or export folder evaluated on a labelled split
    loading    a checkpoint, run dir or export folder -> a ready model (load_model, Predictor)
    pretrained the export folder's files, read without Hydra or the training config
    onnxrt     ONNX export and onnxruntime inference
"""
