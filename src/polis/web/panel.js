// What every dashboard panel shares: its notice line, which says why it shows nothing (not available on
// this hub, or no access for the signed-in department).

import { ApiError } from "./api.js";

export class Panel {
  show(text, kind) {
    this.notice.textContent = text;
    this.notice.className = `notice ${kind}`;
    this.notice.hidden = false;
  }

  // A failed load: a refusal says "No access", anything else that the panel's data is not available.
  failWith(label, error) {
    if (error instanceof ApiError && error.noAccess) this.show(`No access: ${error.message}`, "no-access");
    else this.show(`${label}: ${error.message}`, "not-available");
    if (this.body) this.body.hidden = true;
  }
}
