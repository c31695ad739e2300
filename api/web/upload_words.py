"""What a page says when an upload is refused, by the API's status (the pages get it as ``?refused=``)."""

from __future__ import annotations

from api.web.labels import N_

UPLOAD_REFUSED: dict[int, str] = {
    409: N_("Nothing was added: the case is closed."),
    413: N_("Nothing was added: the document is larger than the limit."),
    415: N_("Nothing was added: a document is taken as PDF, JPEG or PNG, told by its content."),
    422: N_("Nothing was added: choose what the document is, and a file."),
    503: N_("Nothing was added: the service is busy. Try again in a moment."),
}
