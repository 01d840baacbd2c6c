"""The original project's entry point, with its flags (--option finetune --optimizer ... --batch_size 64 --use_gpu).

Same as `mtbert train`; kept so that the original commands keep working.
"""

from mtbert.cli import main, train_parser

if __name__ == "__main__":
    main(parser=train_parser("multitask_classifier.py"))
