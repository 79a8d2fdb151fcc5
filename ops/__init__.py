"""Operations: what an operator does to a running service, from a shell
(``python -m ops``) or through the API and the console, which call the same
functions: dead letters (list, replay, purge) and the queues' figures."""
