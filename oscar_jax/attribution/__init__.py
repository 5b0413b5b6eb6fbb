"""Attribution: verdicts and their calibration (`verdicts`), geometric verification
(`verification`), eq. 14 explanations (`gradcam`), the trusted database (`database`) and the
web server (`server`, with its page in `page/`)."""
