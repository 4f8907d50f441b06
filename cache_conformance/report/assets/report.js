// Shows the matrix of the chosen target; without JavaScript the first view (all targets) stays visible.
"use strict";
const select = document.getElementById("target");

function showChosenView() {
  for (const view of document.querySelectorAll(".view")) {
    view.hidden = view.dataset.target !== select.value;
  }
}

select.addEventListener("change", showChosenView);
showChosenView();
