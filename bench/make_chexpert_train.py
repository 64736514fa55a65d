#!/usr/bin/env python3
"""Write a synthetic CheXpert train.csv with the real file's size and quirks.

223,414 rows, as in CheXpert-v1.0's train.csv, over some 64,400 patients (64,540 there) with
about three studies per patient with a lateral view in one study of six (the real file: 191,027 frontal and 32,387 lateral
images, so most studies have one image; this matters to the Parquet writer, which
dictionary-encodes a text column only when under 75% of its values are distinct): labels
1.0 / 0.0 / -1.0 / blank, AP/PA in {AP, PA, LL, RL, blank}, Sex Unknown, ages 0-90. Deterministic (seeded); needs
only the standard library. Usage: make_chexpert_train.py OUT.csv [ROWS]; with ROWS, the first
ROWS rows of that file (whole studies first, as a smaller CheXpert would have them; bench/scale.sh).
"""
import random
import sys

OBS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
       "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
       "Pleural Other", "Fracture", "Support Devices"]
ROWS, PATIENTS = 223_414, 64_540


def main(out, rows=ROWS):
    rng = random.Random(0)
    states = ["", "", "", "1.0", "0.0", "-1.0"]
    with open(out, "w") as f:
        f.write("Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(OBS) + "\n")
        row = 0
        for p in range(1, PATIENTS + 1):
            sex = rng.choice(["Male", "Female", "Female", "Male", "Unknown"] if p % 97 == 0 else ["Male", "Female"])
            age = 0 if p % 211 == 0 else rng.randint(18, 90)
            studies = 1 + (p * 7919 % 5)
            for s in range(1, studies + 1):
                views = [("Frontal", rng.choice(["AP", "AP", "PA"]))]
                if rng.random() < 0.155:
                    views.append(("Lateral", rng.choice(["", "", "LL", "RL"])))
                for v, (view, proj) in enumerate(views, 1):
                    if row == rows:
                        return
                    path = f"CheXpert-v1.0-small/train/patient{p:05d}/study{s}/view{v}_{view.lower()}.jpg"
                    labels = ",".join(rng.choice(states) for _ in OBS)
                    f.write(f"{path},{sex},{age},{view},{proj},{labels}\n")
                    row += 1
        while row < rows:  # top up on the last patient if the draw fell short
            f.write(f"CheXpert-v1.0-small/train/patient{PATIENTS:05d}/study9/view{row}_frontal.jpg,"
                    f"Male,50,Frontal,AP,{','.join('' for _ in OBS)}\n")
            row += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else ROWS)
