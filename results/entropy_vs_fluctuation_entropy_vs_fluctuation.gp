set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/entropy_vs_fluctuation_entropy_vs_fluctuation.png.tmp.12210'
$s0 << EOD
1.05400098 4.66308594
1.18129716 6.37207031
1.00785341 4.80957031
1.17245892 4.83398438
1.0949018 6.51855469
1.15823962 6.66503906
EOD
$s1 << EOD
0.963341061 6.73828125
1.2056338 6.00585938
0.77467465 3.66210938
1.2763293 7.12890625
1.04643664 7.98339844
1.2656238 8.64257812
EOD
$s2 << EOD
1.66486598 24.5605469
1.74708712 28.1982422
1.78690783 24.8291016
1.75477301 39.9658203
1.65888424 25.7568359
1.6221868 37.0117188
EOD
set title "Routing entropy vs fluctuation, one point per layer and seed"
set xlabel "entropy of the selection distribution (nats)"
set ylabel "top-1 fluctuation (%)"
set grid
set key outside right top
plot $s0 using 1:2 with points pt 7 ps 1.3 title "SMoE (token choice)", $s1 using 1:2 with points pt 7 ps 1.3 title "Similarity-Aware SMoE", $s2 using 1:2 with points pt 7 ps 1.3 title "Attention-Aware SMoE"
