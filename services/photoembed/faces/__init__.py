"""The face stage: find the faces in a READY photo, compute an identity vector for each, and put
each face with its person.

`contract` says what a face model gives; `dlib_model` and `insightface_model` are the two models;
`factory` holds the process's one model (lazy, lock-guarded, like clip/'s); `selfcheck` refuses a
worker whose face model warns at load or disagrees with its recorded probe; `quality` scores a
face; `store` is the stage's queries; `grouping` says whose a face is.
"""
