from sedpa_compress.heads.pattern import HeadPattern, binarize

__all__ = ['HeadPattern', 'binarize']
