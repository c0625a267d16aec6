// The console works without this file; with it, an error answer to an htmx request is shown at the top of the
// page (htmx swaps nothing for a 4xx/5xx answer by default).
document.addEventListener("htmx:responseError", function (event) {
  var box = document.getElementById("errors");
  if (!box) return;
  var page = new DOMParser().parseFromString(event.detail.xhr.responseText || "", "text/html");
  var problem = page.querySelector(".problem");
  var text = problem ? problem.textContent : "The server answered " + event.detail.xhr.status + ".";
  var p = document.createElement("p");
  p.className = "problem";
  p.textContent = text;
  box.replaceChildren(p);
});

// A new request clears what the last one's error said.
document.addEventListener("htmx:beforeRequest", function () {
  var box = document.getElementById("errors");
  if (box) box.replaceChildren();
});
