"""easyhard inside other training frameworks, each an optional extra:

    lightning.py      EasyhardCallback, a Lightning Callback (pip install easyhard[lightning])
    huggingface.py    EasyhardTrainer and RecordingTrainerMixin, for transformers' Trainer
                      (pip install easyhard[hf])
    _recorder.py      what both share: the recorder over the training set, each example at most
                      once per epoch under multi-process training, the eval-mode check, epochs
                      summed across processes, one statistics file

Importing an integration whose library is not installed raises ImportError naming the extra.
"""
