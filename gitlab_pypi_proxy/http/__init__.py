"""What speaks HTTP to clients: the routes (app), the middlewares in front of them (behind_proxy,
access_log, access), and how answers are made (serialize, file_responses, page_memo, the status
page, health and metrics). Errors are raised (gitlab_pypi_proxy.errors) and rendered by one handler.
"""
