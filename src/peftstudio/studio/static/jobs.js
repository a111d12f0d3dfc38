// The job list, in queue order, refreshed every few seconds.
"use strict";

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "–";
}

async function showJobs() {
  const jobs = await api("/jobs");
  const box = document.getElementById("jobs");
  if (!jobs.length) {
    box.replaceChildren(h("p", {}, "No jobs yet. ", h("a", { href: "/wizard/1" }, "Start a run.")));
    return;
  }
  box.replaceChildren(h("table", { class: "jobs" },
    h("tr", {}, h("th", {}, "#"), h("th", {}, "name"), h("th", {}, "status"), h("th", {}, "created"), h("th", {}, "finished")),
    jobs.map((job) => h("tr", {},
      h("td", {}, job.id), h("td", {}, h("a", { href: "/jobs/" + job.id }, job.name)),
      h("td", {}, h("span", { class: "status " + job.status }, job.status)),
      h("td", {}, when(job.created_at)), h("td", {}, when(job.finished_at))))));
}

document.getElementById("top").replaceWith(topBar());
showJobs();
setInterval(showJobs, 3000);
