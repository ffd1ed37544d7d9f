set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_vision_fluctuation.png.tmp.20991'
$s0 << EOD
2 81.0355392
3 71.1856618
4 60.5392157
5 44.0716912
6 23.1311275
EOD
$s1 << EOD
2 54.3198529
3 42.0955882
4 34.0533088
5 24.4332108
6 14.5373775
EOD
$s2 << EOD
2 58.8694853
3 52.0526961
4 45.2205882
5 35.4166667
6 19.8376225
EOD
$s3 << EOD
2 62.1476716
3 50.2604167
4 45.5729167
5 32.7665441
6 17.2181373
EOD
$s4 << EOD
2 60.8762255
3 57.2457108
4 53.6917892
5 37.3621324
6 21.7677696
EOD
$s5 << EOD
2 56.5104167
3 51.5165441
4 43.8112745
5 31.0968137
6 19.8835784
EOD
$s6 << EOD
2 55.6525735
3 47.8094363
4 42.3253676
5 33.7009804
6 18.9338235
EOD
set title "USMoE, pre-training (vision): token choice vs expert choice\nvs unified routing: routing fluctuation per epoch"
set xlabel "epoch"
set ylabel "top-1 fluctuation (%, mean over layers and seeds)"
set grid
set key outside right top
set xtics 1
plot $s0 using 1:2 with linespoints lw 2 title "Token choice, k=1", $s1 using 1:2 with linespoints lw 2 title "Token choice, k=2", $s2 using 1:2 with linespoints lw 2 title "Expert choice, k=1", $s3 using 1:2 with linespoints lw 2 title "Expert choice, k=2", $s4 using 1:2 with linespoints lw 2 title "USMoE, k=1", $s5 using 1:2 with linespoints lw 2 title "USMoE, k=1.5", $s6 using 1:2 with linespoints lw 2 title "USMoE, k=2"
