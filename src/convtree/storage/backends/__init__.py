"""One module per backend: its record store and its URL opener.

================  ===========================================  =============================
module            URL                                          conditional write of the head
================  ===========================================  =============================
``memory``        ``memory://[name]``                          compare and set in one step
                                                               of the event loop (no threads)
``dataknobs``     ``dataknobs-memory://[name]``, or any        an in-process lock (dataknobs-
                  dataknobs-data database passed in            data has no conditional write)
``file``          ``file:///dir``                              rename under a file lock
``sqlite``        ``sqlite:///file.db``                        ``UPDATE ... WHERE revision``
                                                               in one transaction
``postgres``      ``postgresql://...``                         ``UPDATE ... WHERE revision``
                                                               in one transaction
``s3``            ``s3://bucket/prefix``                       conditional PUT (``If-Match``
                                                               / ``If-None-Match``)
================  ===========================================  =============================

Importing this package imports no backend; `registry`
imports a backend's module when its URL scheme is opened.
"""
